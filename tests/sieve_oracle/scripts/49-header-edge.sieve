# Header test edge cases: several header names, several keys, missing headers, case of names.
require ["fileinto", "variables"];

if header :contains ["x-no-such", "subject"] ["nomatch", "Friday"] { fileinto "any-name-any-key"; }
if header :is "SUBJECT" "lunch on friday?" { fileinto "name-case-insensitive"; }
if header :matches "x-no-such" "*" { fileinto "missing-header-never-matches"; }
if not header :contains "x-no-such" "" { fileinto "missing-header-contains-empty-false"; }
if header :is "x-spam-level" "" { fileinto "empty-header-value"; }
if header :contains "received" "relay1.example.net" { fileinto "any-received"; }
if header :matches "content-type" "multipart/*;*boundary=*" { fileinto "multipart-ct"; }
if header :contains "list-unsubscribe" "unsubscribe" { fileinto "long-list-header"; }
if header :matches "message-id" "<*@*>" { set "mid" "${1}"; }
if string :matches "${mid}" "*.*" { fileinto "mid-has-dot"; }
if header :is "to" "undisclosed-recipients:;" { fileinto "to-undisclosed"; }
if header :contains "reply-to" "<>" { fileinto "reply-to-null"; }
