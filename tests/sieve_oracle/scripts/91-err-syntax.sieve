# Missing semicolon and unbalanced brace: compile error.
require "fileinto";
if header :contains "subject" "report" {
    fileinto "Reports"
}
