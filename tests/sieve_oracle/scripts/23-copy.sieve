# :copy keeps the implicit keep alive; a later plain fileinto cancels it.
require ["copy", "fileinto"];

if header :contains "subject" "report" {
    fileinto :copy "Archive";
    redirect :copy "boss@corp.example.com";
}
if header :contains "list-id" "lists.example.org" {
    fileinto :copy "Lists";
    fileinto "Lists";
}
if address :domain :is "from" "example.com" {
    redirect :copy "mirror@y.example";
}
if exists "auto-submitted" {
    fileinto :copy "INBOX";
}
