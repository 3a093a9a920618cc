# relational :count and :value with numeric and string comparators.
require ["relational", "comparator-i;ascii-numeric", "fileinto"];

if header :count "ge" :comparator "i;ascii-numeric" "received" "3" { fileinto "received-ge-3"; }
if header :count "eq" :comparator "i;ascii-numeric" "received" "0" { fileinto "received-none"; }
if address :count "gt" :comparator "i;ascii-numeric" ["to", "cc"] "2" { fileinto "many-recipients"; }
if header :value "ge" :comparator "i;ascii-numeric" "x-spam-score" "5" { fileinto "spam-score-ge-5"; }
if header :value "lt" :comparator "i;ascii-numeric" "x-spam-score" "1" { fileinto "spam-score-lt-1"; }
if header :value "gt" :comparator "i;ascii-numeric" "x-priority" "2" { fileinto "priority-gt-2"; }
if header :value "ge" :comparator "i;ascii-casemap" "subject" "m" { fileinto "subject-ge-m"; }
if header :value "lt" :comparator "i;octet" "subject" "a" { fileinto "subject-lt-a-octet"; }
if header :value "ne" "from" "" { fileinto "from-not-empty"; }
if header :count "ne" :comparator "i;ascii-numeric" "x-no-such-header" "0" { fileinto "never"; }
if address :value "eq" :domain "from" "example.com" { fileinto "from-domain-eq"; }
if header :value "le" :comparator "i;ascii-numeric" "x-spam-score" "7" { fileinto "score-le-7"; }
