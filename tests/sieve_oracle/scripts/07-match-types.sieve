# :is / :contains / :matches with wildcards and escaped wildcards.
require ["fileinto"];

if header :is "subject" "Lunch on Friday?" { fileinto "is-exact"; }
if header :is "subject" "lunch on friday?" { fileinto "is-casefold"; }
if header :contains "subject" "" { fileinto "contains-empty"; }
if header :matches "subject" "*" { fileinto "matches-star"; }
if header :matches "subject" "Lunch on ??????\\?" { fileinto "matches-qmarks"; }
if header :matches "subject" "*\\?" { fileinto "ends-with-qmark"; }
if header :matches "subject" "*\\**" { fileinto "has-literal-star"; }
if header :matches "subject" "[*]*" { fileinto "bracket-prefix"; }
if header :matches "subject" "*%*" { fileinto "has-percent"; }
if header :matches "subject" "re:*" { fileinto "starts-re"; }
if header :matches "subject" "?" { fileinto "one-char"; }
if header :matches "subject" "*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*" { fileinto "forty-chars"; }
if header :contains "x-long-header" "continuation lines, with tabs and spaces" { fileinto "unfolded"; }
if header :matches "x-long-header" "*URGENT" { fileinto "unfolded-end"; }
