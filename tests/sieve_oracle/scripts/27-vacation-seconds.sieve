# vacation-seconds, and the default period when none is given.
require ["vacation", "vacation-seconds", "fileinto"];

if address :domain :is "from" "example.com" {
    vacation :seconds 3600 :subject "Back in an hour" "I will answer within the hour.";
} elsif exists "x-spam-flag" {
    vacation :seconds 0 "Received.";
    fileinto "Junk";
} elsif address :domain :is "from" "example.de" {
    vacation :days 0 "Zero days.";
} else {
    vacation "Default period.";
}
