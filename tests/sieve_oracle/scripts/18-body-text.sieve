# body :text (decoded text parts) versus the default.
require ["body", "fileinto"];

if body :text :contains "lunch" { fileinto "text-lunch"; }
if body :text :contains "Grüße" { fileinto "text-gruesse-decoded"; }
if body :text :contains "1.250,00 EUR by the end" { fileinto "text-qp-soft-break"; }
if body :text :contains "Cheap watches" { fileinto "text-html"; }
if body :text :contains "<html>" { fileinto "text-html-tag"; }
if body :contains "PATCH" { fileinto "default-patch"; }
if body :text :matches "*café*" { fileinto "text-8bit-cafe"; }
if body :text :contains "consulting,1000.00" { fileinto "text-csv-attachment"; }
if body :text :contains "Recipient address rejected" { fileinto "text-bounce"; }
if body :text :contains "From: Alice" { fileinto "text-forwarded-headers"; }
