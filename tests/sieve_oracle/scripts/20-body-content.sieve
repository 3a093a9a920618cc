# body :content with type filters.
require ["body", "fileinto"];

if body :content "text/html" :contains "Q3 report" { fileinto "html-q3"; }
if body :content "text/plain" :contains "Q3 report" { fileinto "plain-q3"; }
if body :content "text" :contains "invoice" { fileinto "text-star-invoice"; }
if body :content "text/csv" :contains "travel" { fileinto "csv-travel"; }
if body :content "application/pdf" :contains "PDF" { fileinto "pdf"; }
if body :content "message/delivery-status" :contains "Action: failed" { fileinto "dsn-failed"; }
if body :content "text/rfc822-headers" :contains "Invitation" { fileinto "rfc822-headers"; }
if body :content "message/rfc822" :contains "lunch" { fileinto "rfc822-lunch"; }
if body :content "multipart" :contains "This is a multi-part message" { fileinto "multipart-preamble"; }
if body :content "" :contains "Cheap" { fileinto "empty-type"; }
if body :content ["text/html", "text/plain"] :contains "Bj" { fileinto "list-of-types"; }
