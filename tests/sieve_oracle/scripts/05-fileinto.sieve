# fileinto by sender domain, into the same folder twice (merged), and into INBOX.
require ["fileinto"];

if address :domain :is "from" ["corp.example.com", "payroll.example"] {
    fileinto "Work";
    fileinto "Work";
}
if address :domain :is "from" "example.com" {
    fileinto "INBOX";
    keep;
}
if header :matches "subject" "*Friday*" {
    fileinto "Calendar.Friday";
}
if not exists "subject" {
    fileinto "No Subject";
}
if header :contains "subject" "café" {
    fileinto "Entwürfe/Café";
}
