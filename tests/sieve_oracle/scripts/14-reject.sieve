# reject with a multi-line reason; reject together with a delivery is a runtime error.
require ["reject", "fileinto", "variables"];

if header :contains "x-virus-status" "Infected" {
    reject text:
Your message was rejected: it contains a virus.
Please scan your computer and try again.
.
;
    stop;
}
if header :matches "subject" "***SPAM*** *" {
    reject "Spam is not accepted here (${1}).";
}
if header :contains "subject" "Automatic reply" {
    reject "no autoreplies";
    fileinto "Auto";
}
