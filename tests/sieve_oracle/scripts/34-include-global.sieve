# include :global, :once versus repeated includes, and stop inside an included script.
require ["include", "variables", "fileinto"];
global "tag";

include :global "spam-policy";
include :personal :once "tagger";
include :personal :once "tagger";
include :global "tagger";
include :global "helpers";
fileinto "tag-${tag}";
include :personal "stopper";
fileinto "not-stopped";
