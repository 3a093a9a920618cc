# fetchdeliver example rules: what a typical procmail user filters.
require ["fileinto", "imap4flags", "variables", "envelope", "subaddress", "mailbox"];

# Spam marked by an upstream filter goes to Junk, already read.
if header :contains "X-Spam-Flag" "YES" {
    fileinto :flags "\\Seen" "Junk";
    stop;
}

# Mailing lists: one folder per list, named after the List-Id.
if header :matches "List-Id" "*<*.*>*" {
    set :lower "list" "${2}";
    fileinto :create "Lists/${list}";
    stop;
}

# Watch for a sender: flag mail from the boss, keep it in INBOX.
if address :is "from" "boss@example.com" {
    addflag "\\Flagged";
    keep;
    stop;
}

# Plus-addressing: me+receipts@example.org lands in Receipts. The envelope says so for mail an
# MTA hands over (deliver, LMTP); fetched mail has only its headers, so To/Cc are tested too.
if anyof (envelope :detail "to" "receipts",
          address :detail ["to", "cc"] "receipts") {
    fileinto "Receipts";
    stop;
}

# Notifications from code hosting go to their own folder.
if anyof (address :domain :is "from" "github.example",
          header :contains "subject" "[CI]") {
    fileinto "Notifications";
    stop;
}

# Everything else: implicit keep (INBOX).
