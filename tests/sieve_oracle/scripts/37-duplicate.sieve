# duplicate: nothing has been seen before in a fresh run.
require ["duplicate", "fileinto", "variables"];

if duplicate { fileinto "dup-message-id"; }
if duplicate :header "subject" { fileinto "dup-subject"; }
if header :matches "from" "*" {
    if duplicate :uniqueid "${1}" :handle "from" :seconds 3600 { fileinto "dup-from"; }
}
if duplicate :last :header "message-id" :handle "again" { fileinto "dup-again"; }
if duplicate :header "message-id" :handle "again" { fileinto "dup-same-check-twice"; }
fileinto "after-duplicate";
