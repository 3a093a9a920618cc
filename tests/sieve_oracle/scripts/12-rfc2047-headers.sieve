# Encoded words in headers are decoded before matching (header test), not in address parts.
require ["fileinto", "variables"];

if header :contains "subject" "Grüße" { fileinto "grüße"; }
if header :is "subject" "Grüße aus München und Köln" { fileinto "subject-exact"; }
if header :contains "from" "Jürgen Müller" { fileinto "from-decoded"; }
if header :contains "to" "Björn" { fileinto "to-latin1"; }
if header :contains "subject" "=?UTF-8?" { fileinto "subject-raw-encoded-word"; }
if address :all :is "from" "juergen@example.de" { fileinto "address-plain"; }
if header :matches "subject" "Grüße aus *" { fileinto "city-${1}"; }
if header :contains "subject" "résumé" { fileinto "8bit-resume"; }
if header :contains "from" "Zoë" { fileinto "8bit-from"; }
if header :contains "x-comment" "caf" { fileinto "latin1-bytes"; }
