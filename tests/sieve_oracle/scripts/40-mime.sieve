# mime: header/address/exists with :mime, :anychild, :type, :subtype, :contenttype, :param.
require ["mime", "fileinto"];

if header :mime :type "content-type" "multipart" { fileinto "top-multipart"; }
if header :mime :anychild :subtype "content-type" "pdf" { fileinto "has-pdf"; }
if header :mime :anychild :contenttype "content-type" "text/html" { fileinto "has-html"; }
if header :mime :anychild :param "filename" :matches "content-disposition" "*.exe" { fileinto "exe-attachment"; }
if header :mime :param "charset" :is "content-type" "utf-8" { fileinto "top-utf8"; }
if header :mime :anychild :param "charset" :is "content-type" "iso-8859-1" { fileinto "latin1-part"; }
if header :mime :param "boundary" :contains "content-type" "boundary" { fileinto "boundary-param"; }
if header :mime :anychild :type "content-type" "message" { fileinto "has-message-part"; }
if exists :mime :anychild "content-disposition" { fileinto "has-disposition"; }
if address :mime :anychild :all :is "from" "alice@example.com" { fileinto "alice-anywhere"; }
if header :mime :anychild :contains "content-description" "Delivery report" { fileinto "dsn-part"; }
if header :mime :type "content-type" "text" { fileinto "top-text"; }
if header :mime :type "content-type" "" { fileinto "empty-type"; }
