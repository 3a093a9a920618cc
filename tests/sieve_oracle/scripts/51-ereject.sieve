# ereject (RFC 5429): refuse at SMTP time when possible. Pigeonhole 0.5.19 does not know it.
require ["ereject"];
if header :contains "subject" "Lunch" {
    ereject "No lunch invitations, please.";
}
