# Combinations the result merger must handle: same target twice, keep + fileinto INBOX, flags.
require ["fileinto", "imap4flags", "copy"];

if header :contains "subject" ["Lunch", "report"] {
    fileinto :flags "$First" "Shared";
    fileinto :flags "$Second" "Shared";
    fileinto "INBOX";
    keep :flags "\\Flagged";
}
if exists "list-id" {
    redirect :copy "a@y.example";
    redirect "a@y.example";
    discard;
}
if exists "x-spam-flag" {
    discard;
    discard;
}
if exists "auto-submitted" {
    keep;
    discard;
    fileinto :copy "Auto";
}
