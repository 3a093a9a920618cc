# Classic routing chain: the first matching branch wins; stop ends the script.
require ["fileinto"];

if header :contains "subject" "invoice" {
    fileinto "Finance";
} elsif address :domain :is "from" "lists.example.org" {
    fileinto "Lists";
} elsif header :contains ["list-id", "list-post"] "lists.example.org" {
    fileinto "Lists/dev";
    stop;
} elsif anyof (header :is "precedence" ["bulk", "junk"], exists "auto-submitted") {
    fileinto "Auto";
} else {
    if true {
        keep;
    }
}
# Only reached when the list branch did not stop.
if header :contains "subject" "Lunch" {
    fileinto "Social";
}
