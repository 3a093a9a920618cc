# body :raw sees the undecoded body, boundaries and encodings included.
require ["body", "fileinto"];

if body :raw :contains "Gr=C3=BC=C3=9Fe" { fileinto "raw-qp"; }
if body :raw :contains "Grüße" { fileinto "raw-decoded-never"; }
if body :raw :contains "--outer-boundary-1" { fileinto "raw-boundary"; }
if body :raw :contains "JVBERi0xLjQ" { fileinto "raw-base64-pdf"; }
if body :raw :contains "Content-Type: text/html" { fileinto "raw-part-header"; }
if body :raw :matches "*=\r\n*" { fileinto "raw-crlf-soft-break"; }
if body :raw :contains "a h=" { fileinto "raw-qp-html"; }
if body :raw :contains "CRLF line endings" { fileinto "raw-crlf-body"; }
