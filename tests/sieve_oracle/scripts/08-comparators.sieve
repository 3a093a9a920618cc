# i;octet vs i;ascii-casemap vs i;ascii-numeric.
require ["fileinto", "comparator-i;ascii-numeric"];

if header :is :comparator "i;octet" "subject" "lunch on friday?" { fileinto "octet-lower"; }
if header :is :comparator "i;octet" "subject" "Lunch on Friday?" { fileinto "octet-exact"; }
if header :contains :comparator "i;ascii-casemap" "subject" "LUNCH" { fileinto "casemap-upper"; }
if header :contains :comparator "i;octet" "subject" "LUNCH" { fileinto "octet-upper"; }
if header :matches :comparator "i;octet" "from" "*ALICE*" { fileinto "octet-matches"; }
if header :is :comparator "i;ascii-numeric" "x-priority" "3" { fileinto "numeric-3"; }
if header :is :comparator "i;ascii-numeric" "x-priority" "003" { fileinto "numeric-003"; }
if header :is :comparator "i;ascii-numeric" "x-spam-score" "7" { fileinto "numeric-score-7"; }
if header :is :comparator "i;ascii-numeric" "x-spam-score" "0" { fileinto "numeric-score-0"; }
if header :is :comparator "i;ascii-numeric" "subject" "banana" { fileinto "numeric-both-infinite"; }
if header :is :comparator "i;ascii-casemap" "subject" "CAFÉ MEETING – NAÏVE RÉSUMÉ ✓" { fileinto "casemap-nonascii"; }
if header :is :comparator "i;ascii-casemap" "subject" "café meeting – naïve résumé ✓" { fileinto "casemap-ascii-only"; }
