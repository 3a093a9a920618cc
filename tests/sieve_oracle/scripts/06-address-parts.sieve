# address :all / :localpart / :domain over several headers.
require ["fileinto"];

if address :all :is "from" "alice@example.com" { fileinto "all-alice"; }
if address :all :is ["to", "cc"] "bob@y.example" { fileinto "all-bob"; }
if address :localpart :is "to" "bob" { fileinto "local-bob"; }
if address :localpart :is "from" "mailer-daemon" { fileinto "local-daemon"; }
if address :domain :is "from" "EXAMPLE.COM" { fileinto "domain-example"; }
if address :domain :is ["to", "cc"] "y.example" { fileinto "domain-y"; }
if address :domain :contains "from" "example" { fileinto "domain-contains-example"; }
if address :domain :matches "sender" "*.example.org" { fileinto "sender-domain-org"; }
if address :all :matches "reply-to" "*sales*" { fileinto "reply-to-sales"; }
if address :localpart :matches "cc" "ben*" { fileinto "cc-ben"; }
if address :all :is "resent-from" "relay-admin@x.example" { fileinto "resent"; }
if address :is "from" "" { fileinto "empty-from-address"; }
if address :is "reply-to" "" { fileinto "empty-reply-to"; }
