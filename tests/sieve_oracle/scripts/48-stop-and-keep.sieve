# Implicit keep bookkeeping: cancelled by fileinto/discard/redirect, not by :copy or flags.
require ["fileinto", "copy", "imap4flags"];

addflag "$Seen-By-Sieve";
if size :over 1K {
    fileinto :copy "Large";
    stop;
}
if header :contains "subject" "Re:" {
    redirect "replies@y.example";
    keep;
    stop;
}
if exists "x-spam-flag" {
    discard;
    stop;
}
if address :domain :is "from" "example.com" {
    fileinto "From-Example";
    if true { stop; }
    fileinto "never";
}
removeflag "$Seen-By-Sieve";
