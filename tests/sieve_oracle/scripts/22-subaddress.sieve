# subaddress :user / :detail on headers and envelope ("+" separator).
require ["subaddress", "envelope", "fileinto", "variables"];

if envelope :detail "to" "lists" { fileinto "lists"; }
if envelope :detail :matches "to" "*" { fileinto "detail-${1}"; }
if address :detail :is "cc" "work" { fileinto "cc-detail-work"; }
if address :user :is "cc" "ben" { fileinto "cc-user-ben"; }
if address :user :is ["to", "cc"] "bob" { fileinto "user-bob"; }
if address :detail :is ["to", "cc"] "" { fileinto "empty-detail"; }
if address :detail :matches "from" "*" { fileinto "from-has-detail"; }
if address :user :matches "sender" "dev-bounces" { fileinto "sender-user"; }
if address :detail :is "sender" "bob=y.example" { fileinto "sender-detail-verp"; }
