# envelope tests on the SMTP envelope (sender -f, recipient -r/-a), with address parts.
require ["envelope", "fileinto", "subaddress"];

if envelope :all :is "from" "MAILER-DAEMON@mx.y.example" { fileinto "env-daemon"; }
if envelope :domain :is "from" "lists.example.org" { fileinto "env-list-domain"; }
if envelope :localpart :matches "from" "*-bounces+*" { fileinto "env-bounces"; }
if envelope :all :is "to" "bob@y.example" { fileinto "env-to-bob"; }
if envelope :user :is "to" "bob" { fileinto "env-user-bob"; }
if envelope :detail :is "to" "lists" { fileinto "env-detail-lists"; }
if envelope :detail :matches "to" "*" { fileinto "env-has-detail"; }
if envelope :domain :is "to" "Y.EXAMPLE" { fileinto "env-to-domain"; }
if envelope :all :contains "from" "example" { fileinto "env-from-example"; }
if not envelope :all :is "from" "" { fileinto "env-from-not-empty"; }
