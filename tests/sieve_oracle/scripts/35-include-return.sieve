# return in the main script ends the script (like stop, implicit keep rules apply).
require ["include", "fileinto"];

include :personal "early-return";
if header :contains "subject" "Lunch" {
    fileinto "Social";
    return;
}
fileinto "end-of-main";
