# ihave guards code for extensions that may be missing; error fails the run.
require ["ihave", "fileinto"];

if ihave "imap4flags" {
    addflag "$ihave";
}
if ihave "x-no-such-extension" {
    some_unknown_command "is never compiled";
} else {
    fileinto "no-such-extension";
}
if ihave "editheader" {
    addheader "X-Ihave" "yes";
    fileinto "have-editheader";
}
# Pigeonhole answers false for variables here (it cannot be loaded through ihave).
if ihave "variables" { fileinto "have-variables"; }
if ihave ["vacation-seconds", "copy"] { fileinto "have-vacation-seconds-and-copy"; }
if header :contains "x-virus-status" "Infected" {
    error "infected mail must not reach this script";
}
