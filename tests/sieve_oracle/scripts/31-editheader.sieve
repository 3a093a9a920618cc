# addheader/deleteheader and their effect on later tests; Received is protected.
require ["editheader", "fileinto", "variables", "index"];

addheader "X-Sieve-Seen" "yes";
addheader :last "X-Sieve-Seen" "second";
if header :index 1 :is "x-sieve-seen" "yes" { fileinto "added-first"; }
if header :index 2 :is "x-sieve-seen" "second" { fileinto "added-last"; }
deleteheader :index 1 "X-Sieve-Seen";
if header :is "x-sieve-seen" "second" { fileinto "deleted-first-one"; }
deleteheader "received";
if exists "received" { fileinto "received-protected"; }
deleteheader :matches "x-spam-*" "*";
if exists "x-spam-score" { fileinto "field-name-is-not-a-pattern"; }
deleteheader :contains "subject" "Lunch";
if not exists "subject" { fileinto "subject-deleted"; }
if header :matches "subject" "*" { addheader "X-Old-Subject" "${1}"; }
if header :contains "x-old-subject" "Q3" { fileinto "copied-subject"; }
deleteheader :index 1 :last "x-sieve-seen";
if not exists "x-sieve-seen" { fileinto "all-gone"; }
addheader "Subject" "=?UTF-8?B?w5xiZXI=?=";
if header :contains "subject" "Über" { fileinto "added-encoded-decoded"; }
if header :index 1 :contains "subject" "=?UTF-8?B?" { fileinto "added-encoded-raw"; }
if header :index 1 :is "subject" "Über" { fileinto "added-first-decoded"; }
