# return ends only this included script.
require ["include", "fileinto"];

if exists "auto-submitted" {
    fileinto "auto-from-include";
    return;
}
fileinto "after-return-check";
