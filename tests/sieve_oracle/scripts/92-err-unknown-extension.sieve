# An extension nobody implements: compile error.
require ["fileinto", "x-no-such-extension"];
fileinto "x";
