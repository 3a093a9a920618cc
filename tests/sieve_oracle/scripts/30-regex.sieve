# regex match type with captures.
require ["regex", "variables", "fileinto"];

if header :regex "subject" "^\\[([a-z]+)\\] (Re: )?(.*)$" {
    fileinto "list-${1}";
}
if header :regex "subject" "invoice [0-9]{4}-([0-9]+)" { fileinto "invoice-${1}"; }
if address :regex :domain "from" "^(corp|lists)\\." { fileinto "regex-domain-${1}"; }
if header :regex :comparator "i;octet" "subject" "lunch" { fileinto "never-octet-case"; }
if header :regex "subject" "LUNCH" { fileinto "casemap-regex"; }
if header :regex "x-spam-score" "^[5-9]\\.[0-9]+$" { fileinto "spam-high"; }
if header :regex "from" "\\(.*\\)" { fileinto "has-comment"; }
if header :regex "subject" "^$" { fileinto "empty-subject"; }
if header :regex "message-id" "^<[^@]+@([^>]+)>$" { fileinto "msgid-${1}"; }
