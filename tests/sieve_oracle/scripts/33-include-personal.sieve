# include :personal with globals, :optional for a missing script, and return.
require ["include", "variables", "fileinto"];
global "listname";

include :personal "lists";
include :personal :optional "this-script-does-not-exist";
if string :is "${listname}" "" {
    include :personal "early-return";
} else {
    fileinto "seen-list-${listname}";
}
