# elsif with no if before it: compile error.
require "fileinto";
elsif header :contains "subject" "x" {
    fileinto "x";
}
