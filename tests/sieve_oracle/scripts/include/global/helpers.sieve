# Global helper that itself includes a personal script once.
require ["include"];
include :personal :once "tagger";
