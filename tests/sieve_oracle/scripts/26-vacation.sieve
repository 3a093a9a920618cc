# A typical out-of-office, skipping lists and bulk mail in the script itself.
require ["vacation", "variables"];

if anyof (exists "list-id", header :is "precedence" ["bulk", "list", "junk"]) {
    stop;
}
if header :matches "subject" "*" {
    set "subj" "${1}";
}
vacation :days 5
         :subject "Out of office (was: ${subj})"
         :from "Bob <bob@y.example>"
         :addresses ["bob@y.example", "robert@y.example"]
         :handle "ooo-2024-03"
text:
Hello,

I am away until 25 March and will read "${subj}" when I am back.
.
;
