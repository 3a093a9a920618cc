# enotify with the mailto method, :encodeurl, valid_notify_method, notify_method_capability.
require ["enotify", "variables", "fileinto"];

if header :matches "from" "*" { set "from" "${1}"; }
if header :matches "subject" "*" { set :encodeurl "subj" "${1}"; }
if header :contains "subject" ["invoice", "report"] {
    notify :importance "1" :message "Invoice from ${from}"
           "mailto:bob-mobile@y.example?subject=${subj}";
}
if exists "x-virus-status" {
    notify :from "alerts@y.example" "mailto:security@y.example?cc=bob@y.example&subject=virus%20scan";
}
if valid_notify_method "mailto:bob@y.example" { fileinto "mailto-valid"; }
if valid_notify_method "xmpp:bob@y.example" { fileinto "xmpp-valid"; }
if valid_notify_method ["mailto:a@y.example", "bogus:x"] { fileinto "never-mixed-valid"; }
if notify_method_capability "mailto:bob@y.example" "Online" ["yes", "maybe"] { fileinto "online-capability"; }
if string :is "${subj}" "Lunch%20on%20Friday%3F" { fileinto "encodeurl"; }
if address :domain :is "from" "example.de" {
    notify :importance "3" "mailto:bob@y.example%2Cassistant@y.example?body=low%20priority";
}
