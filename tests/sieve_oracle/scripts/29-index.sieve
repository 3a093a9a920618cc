# index: :index N and :last on header and date tests.
require ["index", "date", "relational", "fileinto", "variables"];

if header :index 1 :matches "received" "from * (*" { fileinto "first-hop-${1}"; }
if header :index 1 :last :matches "received" "from * (*" { fileinto "origin-${1}"; }
if header :index 2 :contains "received" "relay1" { fileinto "second-relay1"; }
if header :index 9 :contains "received" "" { fileinto "never-index-9"; }
if date :index 1 :zone "+0000" :is "received" "date" "2023-12-31" { fileinto "received-first-2023"; }
if date :index 1 :last :zone "+0000" :value "ge" "received" "hour" "23" { fileinto "origin-late"; }
if address :index 2 :is "cc" "heidi@corp.example.com" { fileinto "second-cc-heidi"; }
