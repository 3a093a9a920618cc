# Nested logic with true/false and not.
require ["fileinto"];

if allof (exists "from", not exists "list-id", anyof (false, header :contains "subject" "a")) {
    fileinto "A";
}
if anyof (allof (true, false), not true, not not false) {
    fileinto "never";
}
if not anyof (exists "x-spam-flag", exists "x-virus-status") {
    fileinto "unscanned";
}
if allof (true) { fileinto "allof-true"; }
if anyof (not allof (exists "to", exists "cc"), header :is "subject" "") {
    fileinto "missing-to-or-cc";
}
