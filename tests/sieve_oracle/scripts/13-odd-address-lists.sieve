# Groups, empty groups, comments, quoted names with commas and escaped quotes.
require ["fileinto", "relational", "comparator-i;ascii-numeric"];

if address :all :is "cc" "anna@x.example" { fileinto "group-member-anna"; }
if address :all :is "cc" "carl@z.example" { fileinto "comment-carl"; }
if address :domain :is "cc" "z.example" { fileinto "uppercase-domain"; }
if address :all :is "cc" "BOB@Y.Example" { fileinto "escaped-quote-bob"; }
if address :all :is "from" "john.doe@x.example" { fileinto "from-with-comma-name"; }
if header :contains "from" "Doe, John" { fileinto "from-header-raw"; }
if address :count "eq" :comparator "i;ascii-numeric" "cc" "4" { fileinto "cc-count-4"; }
if address :count "eq" :comparator "i;ascii-numeric" "to" "0" { fileinto "to-count-0"; }
if address :count "ge" :comparator "i;ascii-numeric" ["to", "cc"] "2" { fileinto "to-cc-ge-2"; }
if header :count "eq" :comparator "i;ascii-numeric" "cc" "1" { fileinto "cc-header-count-1"; }
if exists "to" { fileinto "to-header-exists"; }
if address :localpart :is "cc" "ben+work" { fileinto "localpart-with-plus"; }
if address :matches "to" "*" { fileinto "to-has-address"; }
