# spamtest: 0 = not tested, 1 = clean .. 10 = certainly spam.
require ["spamtest", "relational", "comparator-i;ascii-numeric", "fileinto", "variables"];

if spamtest :value "eq" :comparator "i;ascii-numeric" "0" {
    fileinto "spam-not-tested";
} elsif spamtest :value "ge" :comparator "i;ascii-numeric" "7" {
    fileinto "Junk";
} elsif spamtest :value "ge" :comparator "i;ascii-numeric" "3" {
    fileinto "maybe-spam";
} else {
    fileinto "ham";
}
if spamtest :matches "*" { fileinto "spamtest-${1}"; }
