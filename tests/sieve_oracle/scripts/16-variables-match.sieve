# Match variables ${0}..${9}, kept after a failed match, set and string tests.
require ["variables", "fileinto", "relational", "comparator-i;ascii-numeric"];

set "prefix" "auto";
if header :matches "subject" "*: *" {
    set "first" "${1}";
    set "rest" "${2}";
}
if header :matches "subject" "no-such-subject-*" { fileinto "never"; }
# ${1} still holds the last successful match
if string :is "${1}" "${first}" { fileinto "kept-${first}"; }
if address :matches :all "from" "*@*" {
    fileinto "${prefix}/${2}/${1}";
}
if header :matches "list-id" "*<*.*>" {
    fileinto "list/${2}";
}
if string :is "${undefined}" "" { fileinto "undefined-is-empty"; }
if string :matches "${0}" "*@*" { fileinto "whole-match-is-address"; }
set "a" "${rest}";
if string :count "eq" :comparator "i;ascii-numeric" ["${a}", "${first}", ""] "2" { fileinto "count-nonempty-2"; }
if string :matches "x${a}y" "x?*y" { fileinto "rest-nonempty"; }
set "dollar" "$${1}{";
if string :is "${dollar}" "$${1}{" { fileinto "dollar-not-literal"; }
if string :is "${dollar}" "$$(first){" { fileinto "never-2"; }
