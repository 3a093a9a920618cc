# fileinto without require "fileinto": compile error.
if header :contains "subject" "report" {
    fileinto "Reports";
}
