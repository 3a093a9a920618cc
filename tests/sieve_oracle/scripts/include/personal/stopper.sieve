# stop inside an included script ends the whole run.
require ["fileinto"];

if header :contains "subject" "SPAM" {
    fileinto "Junk";
    stop;
}
