# Global twin of personal/tagger.sieve: appends "g" to the global tag.
require ["include", "variables"];
global "tag";
set "tag" "${tag}g";
