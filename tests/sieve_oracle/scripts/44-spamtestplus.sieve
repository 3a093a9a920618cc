# spamtestplus: :percent gives 0..100.
require ["spamtestplus", "relational", "comparator-i;ascii-numeric", "fileinto", "variables"];

if spamtest :percent :value "gt" :comparator "i;ascii-numeric" "50" { fileinto "Junk"; }
if spamtest :percent :matches "*" { fileinto "percent-${1}"; }
if spamtest :percent :is "0" { fileinto "percent-zero"; }
