# vnd.dovecot.pipe/filter/execute with programs from the configured bin dir.
require ["vnd.dovecot.pipe", "vnd.dovecot.filter", "vnd.dovecot.execute",
         "variables", "copy", "fileinto"];

if address :domain :is "from" "corp.example.com" {
    pipe :copy "archive" ["corp", "${1}"];
}
filter "tag-header" ["fd-filter"];
if header :is "x-filtered-by" "fd-filter" { fileinto "filtered"; }
execute :output "up" "upper" ["hello", "world"];
if string :is :comparator "i;octet" "${up}" "HELLO WORLD" { fileinto "execute-output"; }
execute :output "greeting" "hello" "bob";
if string :is "${greeting}" "hello bob" { fileinto "output-without-newline"; }
if string :matches "${greeting}" "hello bob?" { fileinto "output-keeps-newline"; }
if execute "fail" { fileinto "never-failed-program"; }
if execute "succeed" { fileinto "execute-succeeded"; }
execute :pipe :output "lines" "count-lines";
fileinto "lines-${lines}";
if exists "list-id" {
    pipe "archive" ["list"];
}
