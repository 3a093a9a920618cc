# exists over several headers (all must exist) and size with suffixes.
require ["fileinto"];

if exists "list-id" { fileinto "has-list-id"; }
if exists ["from", "to", "subject", "date"] { fileinto "has-basic-headers"; }
if not exists ["message-id"] { fileinto "no-message-id"; }
if exists "X-SPAM-FLAG" { fileinto "has-spam-flag"; }
if size :over 1K { fileinto "over-1k"; }
if size :under 600 { fileinto "under-600"; }
if size :over 800 { fileinto "over-800"; }
if size :under 1M { fileinto "under-1m"; }
if size :over 0 { fileinto "over-0"; }
if size :over 1G { fileinto "over-1g"; }
