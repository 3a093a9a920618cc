# A constant regular expression that does not compile: compile error.
require ["regex", "fileinto"];
if header :regex "subject" "([a-" {
    fileinto "never";
}
