# discard drops the message unless something keeps it; keep after discard still stores.
if header :contains "subject" "SPAM" {
    discard;
    stop;
}
if header :is "from" "" {
    discard;
}
if exists "x-autoreply" {
    discard;
    keep;
}
if size :under 300 {
    discard;
    stop;
}
keep;
keep;
