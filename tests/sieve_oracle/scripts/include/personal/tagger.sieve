# Appends one "x" to the global tag each time it runs (tests :once).
require ["include", "variables"];
global "tag";
set "tag" "${tag}x";
