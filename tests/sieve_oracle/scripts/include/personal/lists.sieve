# Personal helper: file mailing-list mail by List-Id and tell the caller the list name.
require ["include", "variables", "fileinto", "mailbox"];
global "listname";

if header :matches "list-id" "*<*.*>" {
    set "listname" "${2}";
    fileinto :create "Lists/${2}";
    return;
}
if exists "list-post" {
    set "listname" "unknown";
}
