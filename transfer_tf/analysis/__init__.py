"""The paper's statistics (Sec. 3, Supp. A.1), figures and the study report."""
