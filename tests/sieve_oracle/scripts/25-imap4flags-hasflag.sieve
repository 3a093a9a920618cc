# hasflag on the internal variable and on named variables; :flags and keep :flags.
require ["imap4flags", "fileinto", "variables", "relational", "comparator-i;ascii-numeric"];

setflag "flagvar" ["\\Draft", "$Label1", "$label1"];
if hasflag "flagvar" "$LABEL1" { fileinto "hasflag-casefold"; }
if hasflag :is "\\draft" { fileinto "never-internal-empty"; }
if hasflag :count "eq" :comparator "i;ascii-numeric" "flagvar" "2" { fileinto "flagvar-count-2"; }
if hasflag :contains "flagvar" "Label" { fileinto "hasflag-contains"; }
if hasflag :matches "flagvar" "\\\\*" { fileinto "hasflag-matches-system"; }
addflag "\\Flagged";
if hasflag "\\flagged" { fileinto "internal-flagged"; }
if header :contains "subject" ["Q3", "Lunch"] {
    keep :flags "${flagvar}";
}
if address :domain :is "from" "example.de" {
    fileinto :flags ["\\Answered", "\\answered"] "Answered";
    fileinto "Inherits-internal";
}
