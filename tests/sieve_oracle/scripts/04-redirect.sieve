# Forwarding rules, including duplicates (merged by Pigeonhole) and odd address syntax.
require ["copy"];

if address :is "from" "alice@example.com" {
    redirect "assistant@y.example";
    redirect "assistant@y.example";
    redirect "Assistant <ASSISTANT@y.example>";
}
if header :contains "subject" ["invoice", "report"] {
    redirect :copy "accounting@corp.example.com";
}
if address :localpart :is "from" "MAILER-DAEMON" {
    redirect "postmaster@y.example";
}
if header :contains "list-id" "dev.lists.example.org" {
    redirect :copy "dev-archive@y.example";
    redirect :copy "dev-archive@y.example";
}
