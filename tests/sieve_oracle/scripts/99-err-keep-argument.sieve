# keep takes no argument; a test used as a command; both compile errors.
keep "INBOX";
exists "subject";
