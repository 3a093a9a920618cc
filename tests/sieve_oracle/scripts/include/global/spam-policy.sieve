# Site policy: junk mail flagged by the scanner, flagged as seen.
require ["fileinto", "imap4flags"];

if header :is "x-spam-flag" "YES" {
    fileinto :flags "\\Seen" "Junk";
    stop;
}
