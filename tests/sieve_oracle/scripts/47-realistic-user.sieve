# A realistic personal filter, the kind users actually run.
require ["fileinto", "mailbox", "imap4flags", "variables", "envelope", "subaddress",
         "vacation", "copy", "relational", "comparator-i;ascii-numeric", "body", "regex",
         "date", "include"];

# 1. Site-wide spam policy first.
include :global "spam-policy";

# 2. Bounces and auto-replies go to their own folder, never answered.
if anyof (address :localpart :is "from" ["mailer-daemon", "postmaster"],
          header :contains "auto-submitted" "auto-") {
    fileinto :create "Auto";
    stop;
}

# 3. Mailing lists, by List-Id, into Lists/<name>; mark read when addressed via +lists.
if header :regex "list-id" "<([a-z0-9-]+)\\." {
    set :lower "list" "${1}";
    if envelope :detail "to" "lists" {
        addflag "\\Seen";
    }
    fileinto :create "Lists/${list}";
    stop;
}

# 4. Work mail: copy to Work, flag money matters.
if address :domain :is ["from", "cc"] ["corp.example.com", "payroll.example"] {
    if header :contains "subject" ["invoice", "salary", "payment"] {
        addflag "$Finance";
    }
    fileinto :copy :create "Work";
}

# 5. Old mail (sent last year) is archived by year.
if date :zone "+0000" :value "lt" :comparator "i;ascii-numeric" "date" "year" "2024" {
    if date :zone "+0000" :matches "date" "year" "*" {
        fileinto :create "Archive/${1}";
    }
}

# 6. Big mail gets a flag.
if size :over 1500 { addflag "$Big"; }

# 7. Out of office for direct mail from people.
if allof (not exists ["list-id", "auto-submitted"],
          not header :contains "precedence" ["bulk", "list", "junk"],
          address :all :is ["to", "cc"] "bob@y.example") {
    vacation :days 7 :addresses ["bob@y.example"] :subject "Away this week"
        "I am away this week and will reply next Monday.";
}
