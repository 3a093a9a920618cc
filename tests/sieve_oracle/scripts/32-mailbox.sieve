# mailbox: fileinto :create and mailboxexists (existing mailboxes come from env_options).
require ["mailbox", "fileinto", "imap4flags"];

if mailboxexists "Work" { fileinto :create "Work"; }
if mailboxexists ["Work", "Nope"] { fileinto "never-both"; }
if mailboxexists "INBOX" { fileinto "inbox-exists"; }
if not mailboxexists "Lists" { fileinto :create :flags "\\Seen" "lists-missing"; }
if exists "list-id" {
    fileinto :create "Lists";
    fileinto "Lists";
}
if mailboxexists "Junk" {
    if exists "x-spam-flag" { fileinto :create "Junk"; }
}
