# Two match types on one test: compile error.
if header :is :contains "subject" "report" {
    discard;
}
